"""Keras model definitions (edge + seed profiles), ImageNet weight import, and the shipped default model."""
