"""PISA: repeat-aware session recommendation with ACT-R and transformers"""
