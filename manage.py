#!/usr/bin/env python
import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "billing_project.settings")
    import environ

    from billing_project.joinstack import join_running_stack

    # Same precedence as the settings: the real environment, then .env, then the stack `make run` started.
    environ.Env.read_env(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".env"), overwrite=False)
    if join_running_stack():
        print("manage.py: using the database and broker of the running `make run` stack", file=sys.stderr)
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
