"""TFDS builders for the embedded datasets: generated on this machine, nothing downloaded.

Importing this package registers the builders `mnist1d` and `digits` with TFDS.
"""

from jaxml.data.builders.digits import Digits
from jaxml.data.builders.mnist1d import Mnist1d
from jaxml.data.builders.moving_digits import BouncingMnist, MovingDigits

__all__ = ["BouncingMnist", "Digits", "Mnist1d", "MovingDigits"]
