"""argparse whose errors are one line (flag, value, what is allowed) and a UserError."""

from __future__ import annotations

import argparse

from squeezejax.errors import UserError


class ArgumentParser(argparse.ArgumentParser):

  def error(self, message):
    raise UserError(message)
