"""Clinical-Longformer / Clinical-BigBird long-document models"""
