from twisted.application.service import ServiceMaker

cpro = ServiceMaker("cpro", "cpro.tap", "cpro high-availability cluster daemon", "cpro")
