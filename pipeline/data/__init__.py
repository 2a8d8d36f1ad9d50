"""Where images come from and how they are read: the sources, the manifest, image decoding, the preprocessed splits."""
