import API

FCGIMain.run()
