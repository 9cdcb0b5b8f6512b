"""Traced sizes: Python ints read from dynamic dims, so shape arithmetic follows the input at run time.

While a model is converted with dynamic shapes, ``x.shape[0]``, ``x.size(1)`` and ``x.numel()`` of a
traced tensor return a :class:`TracedInt` for every dim that is dynamic (-1) in the network, and a plain
int for every static one, so fixed-shape code paths stay free of shape layers. A ``TracedInt`` is an
``int`` holding the example's value (torch and Python accept it anywhere an int goes) plus the recipe
that computes it from the network's tensors; arithmetic with ``+ - * // %`` keeps the recipe:

    b, c, h, w = x.shape                    # b: TracedInt(4, dim 0 of x's network tensor)
    n = b * (h // 16)                       # TracedInt(4 * 14, PROD(dim 0, FLOOR_DIV(...)))
    x.reshape(n, -1)                        # the converter turns n into shape layers

The conversion context materializes a recipe as a 1-element INT64 network tensor
(``ConversionContext.shape_value``); converters take sizes from ``ConversionContext.dims``.
Anything that leaves int arithmetic (``int(n)``, ``n / 2``, ``range(n)``) gets the example's plain
value: the probe pass then reports any output that should have varied but did not.
"""
from __future__ import annotations

import operator
from typing import Any, Union
from collections.abc import Callable


_IDENTITY = {"add": 0, "sub": 0, "mul": 1, "floordiv": 1}


class TracedInt(int):
    """An int computed from the dynamic dims of traced tensors.

    ``expr`` is ``("dim", network tensor, axis)`` or ``(op name, left, right)`` with operands that are
    ints or TracedInts; ``op name`` is one of ``add sub mul floordiv mod min max``.
    """

    expr: tuple

    def __new__(cls, value: int, expr: tuple) -> TracedInt:
        obj = int.__new__(cls, value)
        obj.expr = expr
        return obj

    def __repr__(self) -> str:
        return f"TracedInt({int(self)})"

    def _binary(name: str, fn: Callable, reflected: bool = False) -> Callable:
        def method(self: TracedInt, other: Any) -> Any:
            if not isinstance(other, int) or isinstance(other, bool):
                return fn(int(self), other) if not reflected else fn(other, int(self))
            left, right = (other, self) if reflected else (self, other)
            if not isinstance(right, TracedInt) and right == _IDENTITY.get(name):
                return left  # x + 0, x * 1, x // 1: no layer
            if not isinstance(left, TracedInt) and name in ("add", "mul") and left == _IDENTITY[name]:
                return right
            return TracedInt(fn(int(left), int(right)), (name, left, right))

        return method

    __add__ = _binary("add", operator.add)
    __radd__ = _binary("add", operator.add, True)
    __sub__ = _binary("sub", operator.sub)
    __rsub__ = _binary("sub", operator.sub, True)
    __mul__ = _binary("mul", operator.mul)
    __rmul__ = _binary("mul", operator.mul, True)
    __floordiv__ = _binary("floordiv", operator.floordiv)
    __rfloordiv__ = _binary("floordiv", operator.floordiv, True)
    __mod__ = _binary("mod", operator.mod)
    __rmod__ = _binary("mod", operator.mod, True)
    del _binary

    def __neg__(self) -> TracedInt:
        return TracedInt(-int(self), ("sub", 0, self))

    def __pos__(self) -> TracedInt:
        return self

    # an int subclass would otherwise hash and compare as its value, which is what we want; copying keeps it
    def __reduce__(self) -> tuple:
        return int, (int(self),)


Size = Union[int, TracedInt]


def smallest(a: Any, b: Any) -> Any:
    """``min(a, b)`` that stays a traced size (a MIN shape layer) when either is traced, instead of freezing
    the example's choice: ``x[:150]`` over a dim that may hold fewer than 150 rows at run time."""
    if not (isinstance(a, TracedInt) or isinstance(b, TracedInt)):
        return min(a, b)
    return TracedInt(min(int(a), int(b)), ("min", a, b))


def largest(a: Any, b: Any) -> Any:
    """``max(a, b)``, likewise (a MAX shape layer)."""
    if not (isinstance(a, TracedInt) or isinstance(b, TracedInt)):
        return max(a, b)
    return TracedInt(max(int(a), int(b)), ("max", a, b))


def is_traced(value: Any) -> bool:
    """Whether ``value`` is a size that depends on a dynamic dim."""
    return isinstance(value, TracedInt)


def dim_of(value: int, itensor: Any, axis: int) -> TracedInt:
    """The size of ``itensor``'s dim ``axis`` (the example's ``value``) as a traced int."""
    return TracedInt(value, ("dim", itensor, axis))


def source_dim(value: Any) -> tuple:
    """(network tensor name, axis) when ``value`` is exactly one dim of a network tensor, else ()."""
    if isinstance(value, TracedInt) and value.expr[0] == "dim":
        return value.expr[1].name, value.expr[2]
    return ()
