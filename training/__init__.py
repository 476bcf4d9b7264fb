"""digits training: MNIST data, the lab's models and grid, TensorBoard logging, selection, export."""
