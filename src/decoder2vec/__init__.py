from decoder2vec.encoding.encoder import Encoder

__all__ = ["Encoder"]
__version__ = "0.1.0"
