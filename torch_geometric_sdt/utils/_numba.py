r"""A :func:`numba.njit` that caches compiled code in a user cache folder.

``numba.njit(cache=True)`` writes its cache beside the module, into the
package's ``__pycache__``, which may be read-only or shared by several
environments. :func:`njit` compiles the same way but stores the cache in

* ``$NUMBA_CACHE_DIR`` if set (numba's own setting), else
* ``$XDG_CACHE_HOME/torch_geometric_sdt/numba``, else
* ``~/.cache/torch_geometric_sdt/numba``,

in a sub-folder per source folder, as numba does. Only the dispatchers made
here get the custom cache: numba's global configuration and its locator list,
which other libraries (*e.g.* pynndescent) rely on, are left as they are. If
no cache folder is writable, the functions are compiled without a cache.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numba

try:  # numba's cache machinery is not public API: fall back to no cache.
    from numba.core import caching as _caching

    _BASES: tuple[type, ...] | None = (
        _caching._SourceFileBackedLocatorMixin,
        _caching._CacheLocator,
    )
except (ImportError, AttributeError):  # pragma: no cover
    _caching = None
    _BASES = None


def cache_dir() -> str:
    r"""Returns the folder compiled kernels are cached in."""
    if numba.config.CACHE_DIR:
        return numba.config.CACHE_DIR
    root = os.environ.get('XDG_CACHE_HOME') or os.path.join(
        os.path.expanduser('~'), '.cache'
    )
    return os.path.join(root, 'torch_geometric_sdt', 'numba')


def _make_function_cache() -> type | None:
    if _caching is None or _BASES is None:  # pragma: no cover
        return None

    class UserCacheLocator(*_BASES):  # type: ignore[misc]
        def __init__(self, py_func: Callable, py_file: str) -> None:
            self._py_file = py_file
            self._lineno = py_func.__code__.co_firstlineno
            subpath = self.get_suitable_cache_subpath(py_file)
            self._cache_path = os.path.join(cache_dir(), subpath)

        def get_cache_path(self) -> str:
            return self._cache_path

    class UserCacheImpl(_caching.CompileResultCacheImpl):
        _locator_classes = [UserCacheLocator]

    class UserFunctionCache(_caching.FunctionCache):
        _impl_class = UserCacheImpl

    return UserFunctionCache


_FunctionCache = _make_function_cache()


def njit(**options: Any) -> Callable[[Callable], Any]:
    r"""Same as :func:`numba.njit` with :obj:`cache=True`, but caching in
    :func:`cache_dir` instead of beside the module.
    """
    options.pop('cache', None)

    def decorate(func: Callable) -> Any:
        dispatcher = numba.njit(**options)(func)
        # (With NUMBA_DISABLE_JIT=1 numba returns the plain function.)
        if _FunctionCache is not None and hasattr(dispatcher, '_cache'):
            try:
                dispatcher._cache = _FunctionCache(func)
            except RuntimeError:  # no writable cache folder
                pass
        return dispatcher

    return decorate
