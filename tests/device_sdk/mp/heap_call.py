"""The smallest useful device program: connect, call, print. ``test_heap.py`` runs it with ``-X heapsize``.

usage: micropython heap_call.py PORT DEVICE_ID
"""

import sys

from device_sdk import Device

dev = Device("127.0.0.1", int(sys.argv[1]), device_id=sys.argv[2])
dev.connect()
print("result", dev.call("devices/{device_id}/add", {"a": 1, "b": 2}))
dev.close()
