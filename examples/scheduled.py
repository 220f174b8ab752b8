"""Scheduled jobs: an hourly sync and a nightly report, each on its own Fly machine.

Deploy (again after any change: it updates in place, and is a no-op when nothing changed):

    flyjobs schedule deploy examples/scheduled.py
    flyjobs schedule ls                 # last runs, failures with their message, next run due
    flyjobs schedule run nightly_report # one run now, its result printed
    flyjobs schedule logs hourly_sync

Locally, against the emulator with time sped up 3600x (an "hour" every second):

    flyjobs dev --time-scale 3600 &     # prints the two variables to export
    export FLY_API_HOSTNAME=... FLY_API_TOKEN=... FLY_APP=demo FLYJOBS_IMAGE=local
    flyjobs schedule deploy examples/scheduled.py
"""

import datetime

import flyjobs


@flyjobs.remote(schedule="hourly", timeout_s=600, retries=2)
def hourly_sync() -> int:
    """Pretend to sync a feed; the returned count shows in `flyjobs schedule ls`."""
    synced = datetime.datetime.now(datetime.UTC).minute + 1
    print(f"synced {synced} items")
    return synced


@flyjobs.remote(schedule="daily", schedule_kwargs={"recipients": ["ops@example.com"]})
def nightly_report(recipients: list[str]) -> str:
    """Build the daily report (fixed arguments come from the decorator)."""
    print(f"sending the report to {', '.join(recipients)}")
    return f"report sent to {len(recipients)} recipient(s)"


@flyjobs.remote(schedule=flyjobs.Cron("30 7 * * MON-FRI", tz="Europe/Paris"))
def weekday_digest() -> str:
    """A cron schedule, in a time zone: 07:30 Paris time on working days."""
    return "digest sent"
