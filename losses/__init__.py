"""Training-loss terms built on the entreg core (installed as `entreg.losses`)."""
