"""xlm_fast: drop-in XLM models and tokenizer with the transformers API, fused Triton
kernels on CUDA and a plain PyTorch path everywhere else."""

__version__ = "0.1.0"

from .configuration_xlm import XLMConfig
from .modeling_outputs import (
    BaseModelOutput,
    MaskedLMOutput,
    ModelOutput,
    MultipleChoiceModelOutput,
    QuestionAnsweringModelOutput,
    SequenceClassifierOutput,
    TokenClassifierOutput,
    XLMForQuestionAnsweringOutput,
)
from .modeling_xlm import (
    XLMForMultipleChoice,
    XLMForQuestionAnswering,
    XLMForQuestionAnsweringSimple,
    XLMForSequenceClassification,
    XLMForTokenClassification,
    XLMModel,
    XLMPreTrainedModel,
    XLMWithLMHeadModel,
)

__all__ = [
    "BaseModelOutput", "MaskedLMOutput", "ModelOutput", "MultipleChoiceModelOutput", "QuestionAnsweringModelOutput",
    "SequenceClassifierOutput", "TokenClassifierOutput", "XLMConfig", "XLMForMultipleChoice", "XLMForQuestionAnswering",
    "XLMForQuestionAnsweringOutput", "XLMForQuestionAnsweringSimple", "XLMForSequenceClassification",
    "XLMForTokenClassification", "XLMModel", "XLMPreTrainedModel", "XLMTokenizer", "XLMWithLMHeadModel",
    "apply_to_transformers",
]


def __getattr__(name):
    # The tokenizer pulls in sacremoses and the compiled core: load it on first use.
    if name == "XLMTokenizer":
        from .tokenization_xlm import XLMTokenizer

        return XLMTokenizer
    if name == "apply_to_transformers":  # imports transformers only when called
        from .integrations import apply_to_transformers

        return apply_to_transformers
    raise AttributeError(f"module 'xlm_fast' has no attribute {name!r}")
