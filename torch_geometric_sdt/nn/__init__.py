# [exports]

__all__ = [
    # [all]
]
