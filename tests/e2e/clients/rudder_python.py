"""Sends a few events to Sluice with the real rudder-sdk-python client.

Usage: rudder_python.py WRITE_KEY DATA_PLANE_URL
Exits non-zero if the SDK reports an error.
"""
import sys

import rudderstack.analytics as rudder_analytics

errors = []
rudder_analytics.write_key = sys.argv[1]
rudder_analytics.dataPlaneUrl = sys.argv[2]
rudder_analytics.on_error = lambda error, batch: errors.append(error)
rudder_analytics.max_retries = 1

for seq in range(5):
    rudder_analytics.track("py-user", "Python Event", {"seq": seq})
rudder_analytics.identify("py-user", {"plan": "pro"})
rudder_analytics.flush()
rudder_analytics.shutdown()

if errors:
    print("errors:", errors)
    sys.exit(1)
print("sent 6 events")
