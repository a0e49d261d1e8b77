# Compiled copies of some of this package's modules come first when current (see native).
from native import extend

__path__ = extend(__path__, __name__)
