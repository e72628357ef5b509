"""Small networks of the GAN part: MLPs for 2-D data, DCGAN for images, class-conditional
variants."""

__all__: list[str] = []
