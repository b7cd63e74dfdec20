"""UDC synthesis (Sec. 4.2): display optics, the degradation model, ``lrdif synthesize``.

Importing this package registers the displays (``toled``, ``poled``, ``rect``, ``image``)
in :data:`lrdif.registry.DISPLAYS`. See docs/udc.md.
"""

from lrdif.udc.degrade import UDCConfig, UDCSimulator
from lrdif.udc.displays import Display, ImageDisplay, RectDisplay, resolve_display
from lrdif.udc.optics import Optics, crop_kernel, sensor_psf

__all__ = [
    "Display",
    "ImageDisplay",
    "Optics",
    "RectDisplay",
    "UDCConfig",
    "UDCSimulator",
    "crop_kernel",
    "resolve_display",
    "sensor_psf",
]
