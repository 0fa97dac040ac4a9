"""Face alignment as InsightFace does it: 5 landmarks -> similarity transform -> 112x112 ArcFace crop, plus an
offline landmark detector (MediaPipe) and the folder aligner behind `faceflow align`."""
