"""The mask classifier: models, classic augmentation, training and evaluation."""
