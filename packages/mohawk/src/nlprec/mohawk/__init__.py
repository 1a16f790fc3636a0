"""MOHAWK: distilling transformers into Mamba-2 (SSD) students"""
