"""Rosbag2 tools: record a station (``record``), replay a bag with ``/clock`` (``replay``), and the shared
topic list (``topics``). Bags are read and written with the ``rosbags`` package (MCAP or sqlite3); rclpy
only where a command subscribes or publishes."""
