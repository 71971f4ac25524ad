"""Pure tensor / numpy math shared by targets, models and decoding (no Keras state)."""
