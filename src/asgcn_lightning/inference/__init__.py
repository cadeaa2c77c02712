"""The layer between the trained model and the apps: loading a checkpoint (:func:`load_model`), reading
input, evaluating over data sets, localising in time and exporting."""

from asgcn_lightning.inference.model import LoadedModel, load_model

__all__ = ["LoadedModel", "load_model"]
