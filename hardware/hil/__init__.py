"""Hardware-in-the-loop harness: drive a kiosk service on a real board and hold it to its budget.

    python -m hardware.hil --device HOST:PORT [--ca ca.pem --cert c.pem --key k.pem]
        [--mode verify|session] [--duration 600] [--corpus DIR] [--ssh pi@kiosk-0042]
        [--json hil.json]

Run it on the Pi itself (``--device unix:/run/kiosk/kiosk.sock --pid $(systemctl show -p
MainPID --value kiosk)``), or from a host with the board's TLS listener and ``--ssh``
for the temperature, throttling and memory readings. Without a Pi, the same harness
drives a local server (tests/bench/test_bench_hil.py does, briefly, in CI).

Modules: ``corpus`` (the requests), ``probes`` (temperature, throttling, RSS),
``runner`` (the load), ``report`` (percentiles, budget, JSON and table).
"""
