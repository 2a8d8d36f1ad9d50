"""What the model gets right: attention against pooling, transfer learning, a real example with
boxes, saying "I don't know"."""
