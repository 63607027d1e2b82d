"""Label-conditioned StyleGAN: networks, data, training. Import-light: torch loads on use."""


def load_generator(path, device="cpu"):
    """Load a generator from our checkpoint or a GenForce StyleGAN ``.pth`` (see checkpoint.py)."""
    from .checkpoint import load_generator as _load

    return _load(path, device=device)


__all__ = ["load_generator"]
