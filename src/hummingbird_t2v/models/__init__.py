"""Neural network modules: the 3D U-Net (teacher and students), the frame-wise VAE, the text encoder."""
