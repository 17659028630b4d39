"""Test double of the Amazon CloudWatch agent, packaged as a .deb for local image bakes.

`build_deb` builds the package from the `root/` tree (which mirrors `/` on the image) and
`DEBIAN/`; `received` decodes what the double's OTLP receiver stored, for verification.
"""
