"""The bake's steps as they run on the image, with the Python standard library only.

`provision.py` beside this package is the entry point Packer calls once per step. Each
step is a module named for what it installs or does; they share a `StepContext` (the
plan, a command runner, the filesystem root) so the tests can run them against a fake
runner in a temporary root.
"""
