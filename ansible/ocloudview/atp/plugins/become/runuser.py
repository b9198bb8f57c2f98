# Copyright: ocloudview-atp contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Become plugin ocloudview.atp.runuser: switch user with util-linux runuser, which root
(the guest agent's user) may use without a password, PAM prompt or sudo installed."""

from __future__ import annotations

DOCUMENTATION = r"""
name: runuser
short_description: Switch user with runuser (no password; for callers that are root)
description:
  - Runs the task as O(become_user) with C(runuser -u USER -- /bin/sh -c ...). runuser is in
    util-linux on every Linux guest and never prompts when called by root, which is how the
    QEMU guest agent, and so ocloudview.atp.atp, runs commands.
  - runuser sets C(HOME), C(SHELL), C(USER) and C(LOGNAME) for the target user and keeps the
    rest of the environment.
author: ocloudview-atp contributors
version_added: "0.1.0"
options:
  become_user:
    description: User to become.
    default: root
    type: str
    ini:
      - section: privilege_escalation
        key: become_user
    vars:
      - name: ansible_become_user
      - name: ansible_runuser_user
    env:
      - name: ANSIBLE_BECOME_USER
    keyword:
      - name: become_user
  become_exe:
    description: The runuser binary.
    default: runuser
    type: str
    vars:
      - name: ansible_runuser_exe
"""

import shlex

from ansible.plugins.become import BecomeBase


class BecomeModule(BecomeBase):
    """`runuser -u USER -- /bin/sh -c 'echo SUCCESS; CMD'` (no prompt: the caller is root)."""

    name = "ocloudview.atp.runuser"

    def build_become_command(self, cmd, shell):
        super().build_become_command(cmd, shell)
        if not cmd:
            return cmd
        user = self.get_option("become_user") or "root"
        exe = self.get_option("become_exe") or "runuser"
        return f"{exe} -u {shlex.quote(user)} -- {self._build_success_command(cmd, shell)}"
