""" A pickle payload for the marker-file pattern: unpickling it runs ``touch MARKER``. """
import os


class RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f'touch {self.marker}',)
