"""Reading TensorBoard event files back in tests, without TensorBoard."""


def read_events(tb_dir):
  """({tag: [(step, value)]}, {tag: plugin name}) parsed from the event files' TFRecord framing
  (uint64 length, crc, Event proto, crc) with tensorboardX's own protos: no TensorBoard needed."""
  import glob
  import struct

  from tensorboardX.proto import event_pb2
  scalars, plugins = {}, {}
  for path in sorted(glob.glob(str(tb_dir) + "/**/events*", recursive=True)):
    data = open(path, "rb").read()
    pos = 0
    while pos < len(data):
      (n,) = struct.unpack("<Q", data[pos:pos + 8])
      ev = event_pb2.Event.FromString(data[pos + 12:pos + 12 + n])
      pos += 12 + n + 4
      for v in ev.summary.value:
        if v.HasField("simple_value"):
          scalars.setdefault(v.tag, []).append((ev.step, v.simple_value))
        else:
          plugins[v.tag] = v.metadata.plugin_data.plugin_name
  return scalars, plugins
