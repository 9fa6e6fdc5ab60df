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
]


def __getattr__(name):
    # The tokenizer pulls in sacremoses and the compiled core: load it on first use.
    if name == "XLMTokenizer":
        from .tokenization_xlm import XLMTokenizer

        return XLMTokenizer
    raise AttributeError(f"module 'xlm_fast' has no attribute {name!r}")
