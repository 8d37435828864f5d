"""Tools run on a workstation or at installation; nothing in it is imported by `kiosk serve`.

``scores`` (FMR/ROC statistics and the calibration file writer: `kiosk calibrate`,
`kiosk evaluate`), ``evaluate`` (scoring labelled pairs with the real pipeline),
``liveness_report`` (`kiosk liveness-report`), ``acceptance`` (`kiosk acceptance-report`)
and ``audit_verify`` (`kiosk audit verify`). The service reads what they write through
the runtime modules ``kiosk.calibration`` and ``kiosk.liveness_calibration``, and writes
what they check through ``kiosk.audit``.
"""
