"""Breakpoint transformers for modelling and tracking intermediate beliefs"""
