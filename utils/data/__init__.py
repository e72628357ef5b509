"""The book's datasets (DESIGN.md §6): offline by default, deterministic given a seed.

- :func:`toy2d`: 2-D toys (``ring8``, ``grid25``, ``swissroll``, ``moons``, ``checkerboard``);
  :func:`toy2d_log_prob` and :func:`toy2d_mixture` for those with a closed-form density.
- :func:`digits`: the 1,797 real 8x8 handwritten digits shipped with scikit-learn, in [-1, 1].
- :func:`shapes`: procedurally drawn coloured shapes with labels and captions.
- :func:`mnist`, :func:`fashion_mnist`, :func:`cifar10`: the gpu profile's torchvision datasets;
  offline they fail with an error naming the offline alternative.
- :func:`batches`: a stateless minibatch sampler, ``batches(x, batch_size=B)(step)``.
- :func:`text_corpus`: text, the offline ``pydoc`` help text shipped with Python or the gpu
  profile's ``tinyshakespeare``, split 90/5/5 into train/val/test; :class:`CharTokenizer` and the
  byte-level :class:`BPETokenizer` (GPT-2's scheme, trained by our own code, with
  :func:`pretokenize`); :func:`sequence_batches`, a stateless sampler of next-token windows
  ``(x, y)`` from a token stream.
- :func:`preference_pairs`: Bradley-Terry-labelled pairs (bandit arms or vectors) from a known
  gold reward, which it returns with them (:class:`PreferencePairs`).
- :func:`selective_copying`, :func:`induction_heads`: the Mamba paper's synthetic tasks, with
  :func:`task_batches` (a fresh stateless batch per step) and :func:`answer_accuracy`.

Nothing here downloads at import time or unless called with ``download=True``.
"""

from utils.data._common import LabelledImages
from utils.data.bpe import BPE_PATTERN, BPETokenizer, pretokenize
from utils.data.drawn_shapes import (
    COLOUR_NAMES,
    COLOUR_RGB,
    SCALE_NAMES,
    SHAPE_NAMES,
    ShapesData,
    shapes,
)
from utils.data.handwritten_digits import DIGITS_SPLITS, digits
from utils.data.minibatches import Batches, batches, epoch_permutation
from utils.data.preferences import (
    GOLD_REWARDS,
    PREFERENCE_KINDS,
    ArmReward,
    LinearReward,
    MLPReward,
    PreferencePairs,
    preference_pairs,
)
from utils.data.sequence_tasks import (
    IGNORE,
    TASKS,
    SequenceTask,
    TaskBatches,
    answer_accuracy,
    induction_heads,
    selective_copying,
    task_batches,
)
from utils.data.text import (
    TEXT_CORPORA,
    TEXT_SPLITS,
    TINYSHAKESPEARE_URL,
    CharTokenizer,
    SequenceBatches,
    sequence_batches,
    text_corpus,
)
from utils.data.torchvision_sets import (
    CIFAR10_CLASSES,
    FASHION_MNIST_CLASSES,
    cifar10,
    data_root,
    fashion_mnist,
    mnist,
)
from utils.data.toys import TOY2D_NAMES, toy2d, toy2d_log_prob, toy2d_mixture

__all__ = [
    "BPE_PATTERN",
    "CIFAR10_CLASSES",
    "COLOUR_NAMES",
    "COLOUR_RGB",
    "DIGITS_SPLITS",
    "FASHION_MNIST_CLASSES",
    "GOLD_REWARDS",
    "IGNORE",
    "PREFERENCE_KINDS",
    "SCALE_NAMES",
    "SHAPE_NAMES",
    "TASKS",
    "TEXT_CORPORA",
    "TEXT_SPLITS",
    "TINYSHAKESPEARE_URL",
    "TOY2D_NAMES",
    "ArmReward",
    "BPETokenizer",
    "Batches",
    "CharTokenizer",
    "LabelledImages",
    "LinearReward",
    "MLPReward",
    "PreferencePairs",
    "SequenceBatches",
    "SequenceTask",
    "ShapesData",
    "TaskBatches",
    "answer_accuracy",
    "batches",
    "cifar10",
    "data_root",
    "digits",
    "epoch_permutation",
    "fashion_mnist",
    "induction_heads",
    "mnist",
    "preference_pairs",
    "pretokenize",
    "selective_copying",
    "sequence_batches",
    "shapes",
    "task_batches",
    "text_corpus",
    "toy2d",
    "toy2d_log_prob",
    "toy2d_mixture",
]
