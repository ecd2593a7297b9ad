"""TFDS builders: embedded datasets (generated here) and the S5 paper's tasks (from user files).

Importing this package registers the builders `mnist1d`, `digits` and the paper tasks
(`smnist`, `psmnist`, `scifar`, `listops`, `imdb`, `aan`, `lra_cifar`, `pathfinder32`,
`pathx`, `speech_commands35`) with TFDS.
"""

from jaxml.data.builders.digits import Digits
from jaxml.data.builders.lra_text import Aan, Imdb, Listops
from jaxml.data.builders.mnist1d import Mnist1d
from jaxml.data.builders.moving_digits import BouncingMnist, MovingDigits
from jaxml.data.builders.pathfinder import Pathfinder32, Pathx
from jaxml.data.builders.pixel_tasks import LraCifar, Psmnist, Scifar, Smnist
from jaxml.data.builders.speech_commands import SpeechCommands35

PAPER_TASK_BUILDERS = {
    cls.name: cls
    for cls in (
        Smnist, Psmnist, Scifar, Listops, Imdb, Aan, LraCifar, Pathfinder32, Pathx,
        SpeechCommands35,
    )
}  # fmt: skip

__all__ = [
    "PAPER_TASK_BUILDERS",
    "Digits",
    "Mnist1d",
    "MovingDigits",
    "BouncingMnist",
    *(c.__name__ for c in PAPER_TASK_BUILDERS.values()),
]
