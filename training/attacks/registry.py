"""Attacks by name: ``make_attack("pgd", epsilon=8, steps=10)``.

Built-ins (see :func:`available_attacks`): ``fgsm`` (:class:`FGSM`), ``pgd`` (:class:`PGDLinf`),
``pgd_l2`` (:class:`PGDL2`), ``bim`` (:class:`BIM`), ``mim`` (:class:`MIM`), ``apgd_ce``
(:class:`APGDCE`), ``apgd_dlr`` (:class:`APGDDLR`), ``apgd_t`` (:class:`APGDT`), ``square``
(:class:`Square`), ``autoattack`` (:class:`AutoAttack`); names are case-insensitive and ``-``
may stand for ``_`` (``apgd-ce``). Any other name is looked up as an ART evasion attack class
(e.g. ``"DeepFool"``, optionally written ``"art:DeepFool"``) and wrapped by :class:`ARTAttack`;
ART is an optional extra.
"""

from __future__ import annotations

import inspect
from typing import Any

from training.attacks.apgd import APGDCE, APGDDLR, APGDT
from training.attacks.art_adapter import INSTALL_HINT, ARTAttack, art_evasion_attacks
from training.attacks.autoattack import AutoAttack
from training.attacks.base import Attack, AttackError, AttackKind
from training.attacks.bim import BIM
from training.attacks.fgsm import FGSM
from training.attacks.mim import MIM
from training.attacks.pgd import PGDLinf
from training.attacks.pgd_l2 import PGDL2
from training.attacks.square import Square

BUILTIN_ATTACKS: dict[str, type[Attack]] = {
    "fgsm": FGSM,
    "pgd": PGDLinf,
    "pgd_l2": PGDL2,
    "bim": BIM,
    "mim": MIM,
    "apgd_ce": APGDCE,
    "apgd_dlr": APGDDLR,
    "apgd_t": APGDT,
    "square": Square,
    "autoattack": AutoAttack,
}


def available_attacks() -> list[str]:
    """Names of the built-in attacks (ART attacks come on top, by their class names)."""
    return list(BUILTIN_ATTACKS)


def takes_parameter(name: str, parameter: str) -> bool:
    """Whether the built-in attack ``name`` has ``parameter`` (e.g. ``steps``)."""
    builtin = BUILTIN_ATTACKS.get(name.lower().replace("-", "_"))
    return builtin is not None and parameter in inspect.signature(builtin.__init__).parameters


def attack_kind(name: str) -> AttackKind | None:
    """How the built-in attack ``name`` searches (single-step, iterative, ...); None otherwise."""
    builtin = BUILTIN_ATTACKS.get(name.lower().replace("-", "_"))
    return builtin.kind if builtin is not None else None


def make_attack(name: str, **params: Any) -> Attack:
    """An attack by name with validated parameters; raises :class:`AttackError` otherwise."""
    builtin = BUILTIN_ATTACKS.get(name.lower().replace("-", "_"))
    if builtin is not None:
        accepted = [p for p in inspect.signature(builtin.__init__).parameters if p != "self"]
        unknown = sorted(set(params) - set(accepted))
        if unknown:
            raise AttackError(f"{name}: unknown parameter(s) {unknown}; it takes {accepted}")
        if "epsilon" not in params:
            raise AttackError(f"{name}: epsilon is required (pixel units)")
        return builtin(**params)
    art_name = name[4:] if name.lower().startswith("art:") else name
    art_names = art_evasion_attacks()
    if art_name not in art_names:
        extra = (
            f" or an ART evasion attack class ({', '.join(art_names)})"
            if art_names
            else f"; ART evasion attacks need ART ({INSTALL_HINT})"
        )
        raise AttackError(
            f"unknown attack {name!r}: choose one of {', '.join(available_attacks())}{extra}"
        )
    return ARTAttack(art_name, **params)
