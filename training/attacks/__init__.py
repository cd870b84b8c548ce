"""Adversarial attacks behind one interface: ``attack.generate(model, x, y) -> x_adv``.

Built-ins: FGSM, PGD-L∞, PGD-L2, BIM, MIM, APGD-CE/-DLR/-T, Square, AutoAttack (pixel space, on
logits); any ART evasion attack by
name through :class:`ARTAttack` (optional extra). See :func:`make_attack`.
"""

from training.attacks.apgd import APGDCE, APGDDLR, APGDT
from training.attacks.art_adapter import ARTAttack, art_evasion_attacks
from training.attacks.autoattack import AutoAttack
from training.attacks.base import Attack, AttackError
from training.attacks.bim import BIM
from training.attacks.fgsm import FGSM
from training.attacks.mim import MIM
from training.attacks.pgd import PGDLinf
from training.attacks.pgd_l2 import PGDL2
from training.attacks.registry import BUILTIN_ATTACKS, available_attacks, make_attack
from training.attacks.square import Square

__all__ = [
    "APGDCE",
    "APGDDLR",
    "APGDT",
    "AutoAttack",
    "Square",
    "BIM",
    "BUILTIN_ATTACKS",
    "FGSM",
    "MIM",
    "PGDL2",
    "ARTAttack",
    "Attack",
    "AttackError",
    "PGDLinf",
    "art_evasion_attacks",
    "available_attacks",
    "make_attack",
]
