# Copyright: ocloudview-atp contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Callback plugin ocloudview.atp.preload: imports gRPC once in ansible-playbook's main
process, so the worker forked for every task inherits it instead of importing it again
(about 0.1 s a task, most of the connection plugin's own cost). It reports nothing."""

from __future__ import annotations

DOCUMENTATION = r"""
name: preload
type: aggregate
short_description: Load gRPC once for ocloudview.atp.atp, not once per task
description:
  - Ansible forks a worker for every task, and the worker loads the connection plugin
    afresh, gRPC included (about 0.1 s). With this callback enabled the main process loads
    it once before the play and every worker inherits it. It prints nothing.
  - Enable it with C(callbacks_enabled = ocloudview.atp.preload) in ansible.cfg
    (C([defaults])) or C(ANSIBLE_CALLBACKS_ENABLED=ocloudview.atp.preload).
author: ocloudview-atp contributors
version_added: "0.1.0"
"""

from ansible.plugins.callback import CallbackBase

# The import is the point: a missing grpcio is reported by the connection plugin.
from ansible_collections.ocloudview.atp.plugins.plugin_utils import atp_grpc  # noqa: F401


class CallbackModule(CallbackBase):
    """Does nothing but exist: its import loaded gRPC into the main process."""

    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "ocloudview.atp.preload"
    CALLBACK_NEEDS_ENABLED = True
