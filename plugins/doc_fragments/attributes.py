# -*- coding: utf-8 -*-
# Copyright: netbsd.pf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):

    # netbsd.pf.attributes.platform: every module that talks to /dev/pf runs on NetBSD only.
    PLATFORM = r"""
attributes:
  platform:
    description: Target OS/families that can be operated against.
    support: N/A
    platforms: netbsd
"""
