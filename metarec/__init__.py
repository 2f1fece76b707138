"""metarec: few-shot domain adaptation for recommender systems by meta-learning."""

__version__ = "0.1.0"
