"""What the served model is asked: the prediction log and the drift report on it."""
