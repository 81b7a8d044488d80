"""probformer: the Probabilistic Transformer with muP.

Importing the package registers its model families with Hugging Face transformers (AutoConfig,
AutoModelForMaskedLM, AutoTokenizer), so a trained run's ``model/`` directory loads with the Auto
classes and ``transformers.pipeline("fill-mask", model=...)``.
"""

from probformer.models.registry import register_with_transformers

register_with_transformers()

__version__ = "0.2.0"
