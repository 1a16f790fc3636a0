"""Compact clinical encoders by knowledge distillation and continual learning"""
