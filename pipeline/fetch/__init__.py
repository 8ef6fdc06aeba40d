"""`vipstream fetch`: a URL corpus (HD-VILA-100M style) -> VIDEOS/ of mp4 + WebVTT files and a
manifest `vipstream build` reads as is. yt-dlp used as a library, one streaming Ray task per
group of videos; see job.py for the flow and state.py for what VIDEOS/ holds."""
