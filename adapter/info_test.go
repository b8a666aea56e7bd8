package adapter

import "testing"

func TestReadInfo(t *testing.T) {
	info, err := ReadInfo("../lora/testdata/case2_like") // lorafit.json version 1
	if err != nil {
		t.Fatal(err)
	}
	if info.NumClasses != 10 || len(info.ClassNames) != 10 || info.Preprocess.Crop != 28 || info.Base.SHA256 == "" {
		t.Errorf("info %+v", info)
	}
	info, err = ReadInfo(t.TempDir()) // PEFT's own: no lorafit.json
	if err != nil || info.Preprocess.Crop != 224 || info.Base.SHA256 != "" {
		t.Errorf("without lorafit.json: %+v, %v", info, err)
	}
}
