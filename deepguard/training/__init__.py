"""Training of detector members (Keras): data caching, augmentation, the fit loop, and the default-model recipe."""
