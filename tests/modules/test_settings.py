"""Each option's allowed values have one source: the type in the module's signature."""

import inspect
import typing

from corl.modules.corl_module import CoRLModule
from corl.modules.settings import CHOICES


def test_the_checked_choices_are_the_signatures_types():
    hints = typing.get_type_hints(CoRLModule.__init__)
    for name, choices in CHOICES.items():
        assert typing.get_args(hints[name]) == choices, name
        default = inspect.signature(CoRLModule.__init__).parameters[name].default
        assert default in choices, f"model.{name}'s default {default!r} is one of its choices"
