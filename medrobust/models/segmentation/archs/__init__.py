"""Registered segmentation networks, one file each (MONAI imported inside ``build``)."""
