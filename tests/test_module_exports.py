"""Every boat_mm module says what it exports: ``__all__`` names exist, and every public function or class
defined in the module (not imported into it) is listed."""
import importlib
import inspect
import pkgutil

import pytest

import boat_mm

MODULES = sorted(name for _, name, _ in pkgutil.walk_packages(boat_mm.__path__, 'boat_mm.'))


@pytest.mark.parametrize('name', MODULES)
def test_all_lists_what_the_module_defines(name):
    module = importlib.import_module(name)
    exported = getattr(module, '__all__', None)
    assert exported is not None, f'{name} has no __all__'
    missing = [n for n in exported if not hasattr(module, n)]
    assert not missing, f'{name}.__all__ names what it does not have: {missing}'
    defined = [n for n, obj in vars(module).items()
               if not n.startswith('_') and (inspect.isfunction(obj) or inspect.isclass(obj))
               and getattr(obj, '__module__', None) == name]
    unlisted = sorted(set(defined) - set(exported))
    assert not unlisted, f'{name} defines public {unlisted} that __all__ does not list'
