"""MuJoCo simulation of the embodiments: scenes (``scenes.build_scene``), gymnasium envs, scripted experts.

Importing this package selects the headless OpenGL platform (before anything imports mujoco) and registers the
gymnasium ids ``MolmoAct2Ros/{SO101,SO100,YAMBimanual,FrankaDROID}-v0`` when gymnasium is installed (the ``sim``
extra); without it the rest of the project still imports.
"""

from __future__ import annotations

import importlib.util

from molmoact2_ros.sim.rendering import select_gl_backend

select_gl_backend()

if importlib.util.find_spec("gymnasium") is not None:
    from molmoact2_ros.sim.envs import register_envs

    register_envs()
