"""nlprec retrieval and recommendation HTTP service"""
