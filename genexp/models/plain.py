"""Your own `torch.nn.Module` (`forward(x) -> logits`) as a genexp model.

A plain module has no `embed`/`head` split, so `PlainModel` perturbs its input itself: embed is the
identity and head is the module. That serves every method whose perturbation acts on the input
(vectors, images, TF-IDF). Token ids cannot be perturbed: a method that needs an embedding of them
is refused (`PlainTokenModel.embed`) with what to add. The constructor gets the config's keys, plus the
data's `input_shape`, `num_classes` (and a text encoder's `vocab_size`, `token_counts`) for the
parameters of those names it declares.
"""
from __future__ import annotations

import functools
import inspect
from typing import Any

from torch import Tensor, nn

from genexp.errors import GenexpError
from genexp.models.base import GenexpModel


class PlainModel(GenexpModel):
    """`module` under the genexp contract: embed is GenexpModel's identity (so a method may compile
    the step as for genexp's own vector models), head is the module. Its weights are `module.*`."""

    def __init__(self, module: nn.Module, described: str) -> None:
        super().__init__()
        self.module = module
        self.described = described

    def head(self, h: Tensor, mask: Tensor | None = None) -> Tensor:
        return self.module(h)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        return self.module(x)


class PlainTokenModel(PlainModel):
    """A plain module that reads token ids: clean passes work (the module embeds them itself), so
    does a perturbation of its one nn.Embedding's matrix (method=vat_embedding_matrix); a
    perturbation of its input is refused, as perturbing integers means nothing."""

    def embedding_layer(self) -> nn.Embedding | None:
        tables = [m for m in self.module.modules() if isinstance(m, nn.Embedding)]
        return tables[0] if len(tables) == 1 else None

    def embed(self, x: Tensor) -> Tensor:
        also = " or vat_embedding_matrix" if self.embedding_layer() is not None else ""
        raise GenexpError(
            f"this method perturbs the embedding of the token ids that {self.described} reads, and a plain "
            f"nn.Module does not expose one: subclass genexp.models.GenexpModel and split forward into "
            f"embed(x) -> the embedding and head(h, mask) -> logits, or drop model.text_encoder (texts then "
            f"reach it as TF-IDF vectors), or use method=none{also}")


def _described(cls: Any) -> str:
    return f"{getattr(cls, '__module__', '?')}.{getattr(cls, '__qualname__', repr(cls))}"


def constructor_kwargs(factory: functools.partial, offered: dict[str, Any], where: str) -> dict[str, Any]:
    """Which of the data's constructor arguments (`offered`) `factory` (the config's partial) gets:
    all for a genexp model (their contract takes them), those it names for a plain module (or all
    behind `**kwargs`). Then the call is checked against the signature, so that a key the config
    lacks or has too many is one line, not a TypeError from deep inside the build."""
    cls = factory.func
    try:
        sig = inspect.signature(cls)
    except (TypeError, ValueError):
        return offered
    params = sig.parameters
    takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
    genexp_model = inspect.isclass(cls) and issubclass(cls, GenexpModel)
    given = offered if genexp_model or takes_any else {k: v for k, v in offered.items() if k in params}
    keywords = {**factory.keywords, **given}
    try:
        sig.bind(*factory.args, **keywords)
    except TypeError:
        pass
    else:
        return given
    unknown = [k for k in factory.keywords if k not in params and not takes_any]
    if unknown:
        raise GenexpError(f"{where} sets {unknown[0]!r}, which the class does not take: remove it from the model's "
                          f"yaml or add the parameter")
    handed = [k for k in given if k not in params and not takes_any]
    if handed and handed[0] in ("input_shape", "num_classes"):
        raise GenexpError(f"{where} does not take {handed[0]!r}, which a GenexpModel subclass is given: add the "
                          f"parameter (or subclass torch.nn.Module, which gets only the parameters it names)")
    if handed:
        raise GenexpError(f"{where} does not take {handed[0]!r}, which model.text_encoder hands "
                          f"over to models that read token ids: use such a model (model=lstm) or set "
                          f"model.text_encoder=null")
    bound = set(list(params)[:len(factory.args)])
    missing = [n for n, p in params.items() if p.default is p.empty and n not in keywords and n not in bound
               and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    if missing:
        raise GenexpError(f"{where} needs {missing[0]!r}, which nothing sets: set it in the "
                          f"model's yaml ({missing[0]}: <value>); genexp passes only {', '.join(offered)} "
                          f"to the parameters of those names")
    raise GenexpError(f"{where}: the model's yaml does not fit its signature {sig}: fix its keys or _args_")


def as_genexp_model(model: Any, where: str, *, tokens: bool) -> GenexpModel:
    """A genexp model as it is; a plain nn.Module wrapped in `PlainModel` (`PlainTokenModel` when
    the data are token ids); anything else refused."""
    if isinstance(model, GenexpModel):
        return model
    if isinstance(model, nn.Module):
        return (PlainTokenModel if tokens else PlainModel)(model, _described(type(model)))
    raise GenexpError(f"{where} built a {type(model).__name__}, not a torch.nn.Module: name an nn.Module class "
                      f"in model._target_")
